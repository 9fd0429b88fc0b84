"""Where a dataset's images come from: the official archives (downloaded or local), image folders, the digits
stand-in; `select.load` picks one by `data.source`. Imports the foundations and data only."""
