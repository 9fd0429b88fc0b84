"""Stage download@<dataset>: fetch or read the data, split off validation, write data/<dataset>/.

Before writing, it refuses settings the later stages could not run on these splits (data/fits.py),
so a bad combination stops here, not after the models have trained."""

from cifarbench import paths
from cifarbench.data import dataset, fits
from cifarbench.data.sources import released_c, select
from cifarbench.pipeline import entry


def main(s):
    data = s.params.data
    ds = select.load(s.dataset, data.source, data.dir, data.verify)
    splits = dataset.prepare(ds, data.limit, data.val_size, s.params.seed)
    fits.check(s.dataset, splits, ds.classes, data.limit, s.params.probe.shots)
    index = dataset.test_index(ds, data.limit, s.params.seed)
    corrupted = released_c.resolve(s.dataset, data, s.params.evaluate, splits["test"].labels, index, len(ds.test))
    dataset.save(ds, splits, paths.data_dir(s.dataset))
    released_c.write(corrupted, paths.data_dir(s.dataset))
    counts = ", ".join(f"{len(split)} {name}" for name, split in splits.items())
    print(f"{s.dataset}: {ds.source}, {len(ds.classes)} classes, {counts} → {paths.data_dir(s.dataset)}/")
    print(f"{s.dataset} corruptions: {corrupted['source']} ({corrupted['why']})")


if __name__ == "__main__":
    entry.run(main, __doc__, args=("dataset",))
