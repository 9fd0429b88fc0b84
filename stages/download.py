"""Stage download@<dataset>: fetch or read the data, split off validation, write data/<dataset>/."""

import argparse

from cifarbench import DATASETS, dataset, paths, sources
from cifarbench import params as paramslib
from cifarbench.errors import exit_on_bench_error


@exit_on_bench_error
def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", choices=DATASETS)
    name = parser.parse_args().dataset
    params = paramslib.load()
    data = params.data
    ds = sources.load(name, data.source, data.dir, data.verify)
    splits = dataset.prepare(ds, data.limit, data.val_size, params.seed)
    dataset.save(ds, splits, paths.data_dir(name))
    counts = ", ".join(f"{len(s)} {k}" for k, s in splits.items())
    print(f"{name}: {ds.source}, {len(ds.classes)} classes, {counts} → {paths.data_dir(name)}/")


if __name__ == "__main__":
    main()
