"""Stage recipes: check params.yaml and write each model's resolved spec and recipes to recipes/.

Training stages depend on these files rather than on params keys, so a change
to params.yaml reruns exactly the models whose recipe it changes.
"""

from cifarbench.models import checks
from cifarbench.pipeline import entry, recipes


def main(s):
    checks.check(s.params)  # every model buildable as asked, before any training starts
    files = recipes.write(s.params)
    print(f"{len(s.params.keys)} models ({', '.join(s.params.keys)}): {len(files)} recipe files in recipes/")


if __name__ == "__main__":
    entry.run(main, __doc__)
