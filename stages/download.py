"""Stage download@<dataset>: fetch or read the data, split off validation, write data/<dataset>/.

Before writing, it refuses settings the later stages could not run on these splits (data/fits.py),
so a bad combination stops here, not after the models have trained."""

from cifarbench import paths
from cifarbench.data import dataset, fits
from cifarbench.data.sources import select
from cifarbench.pipeline import entry


def main(s):
    data = s.params.data
    ds = select.load(s.dataset, data.source, data.dir, data.verify)
    splits = dataset.prepare(ds, data.limit, data.val_size, s.params.seed)
    fits.check(s.dataset, splits, ds.classes, data.limit, s.params.probe.shots)
    dataset.save(ds, splits, paths.data_dir(s.dataset))
    counts = ", ".join(f"{len(split)} {name}" for name, split in splits.items())
    print(f"{s.dataset}: {ds.source}, {len(ds.classes)} classes, {counts} → {paths.data_dir(s.dataset)}/")


if __name__ == "__main__":
    entry.run(main, __doc__, args=("dataset",))
