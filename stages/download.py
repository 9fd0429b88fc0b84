"""Stage download@<dataset>: fetch or read the data, split off validation, write data/<dataset>/."""

from cifarbench import paths
from cifarbench.data import dataset
from cifarbench.data.sources import select
from cifarbench.pipeline import entry


def main(s):
    data = s.params.data
    ds = select.load(s.dataset, data.source, data.dir, data.verify)
    splits = dataset.prepare(ds, data.limit, data.val_size, s.params.seed)
    dataset.save(ds, splits, paths.data_dir(s.dataset))
    counts = ", ".join(f"{len(split)} {name}" for name, split in splits.items())
    print(f"{s.dataset}: {ds.source}, {len(ds.classes)} classes, {counts} → {paths.data_dir(s.dataset)}/")


if __name__ == "__main__":
    entry.run(main, __doc__, args=("dataset",))
