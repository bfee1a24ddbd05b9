"""A seeded sample of one module's mutants for `make mutate`, and the score of a sample (docs/mutation.md).

mutmut 3 writes every mutant's name into ``mutants/<path>.meta`` when it generates them (any
``mutmut run`` does, before testing). A whole module is hours on 2 cores; a sample is minutes:

    python scripts/mutant_sample.py dora_bench/run/train.py --seed 22 --n 40 \
        --only '*x_train_epoch__*' '*x_linear_warmup_decay__*' > sample.txt
    mutmut run --max-children 1 $(cat sample.txt)
    python scripts/mutant_sample.py dora_bench/run/train.py --score sample.txt

The sample is ``random.Random(seed).sample`` of the sorted names that match ``--only`` (all of the
module's when omitted), itself sorted; every name when ``--n`` is at least their count.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import random
from collections import Counter
from pathlib import Path

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 36: "timeout", None: "not run"}


def mutants_of(module: str) -> dict[str, int | None]:
    meta = Path("mutants") / f"{module}.meta"
    return json.loads(meta.read_text())["exit_code_by_key"]


def sample(names: list[str], only: list[str], n: int, seed: int) -> list[str]:
    pool = sorted(name for name in names if not only or any(fnmatch.fnmatch(name, p) for p in only))
    return sorted(random.Random(seed).sample(pool, min(n, len(pool))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help="a path under only_mutate, e.g. dora_bench/run/train.py")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--only", nargs="*", default=[], help="globs on the mutant names (the functions)")
    parser.add_argument("--score", help="a file of mutant names: print each one's status and the count")
    args = parser.parse_args()
    codes = mutants_of(args.module)
    if not args.score:
        print("\n".join(sample(list(codes), args.only, args.n, args.seed)))
        return
    names = Path(args.score).read_text().split()
    status = {name: STATUS.get(codes[name], "other") for name in names}
    for name in names:
        if status[name] != "killed":
            print(f"{status[name]:9} {name}")
    counts = Counter(status.values())
    print(f"{counts['killed']}/{len(names)} killed", dict(counts))


if __name__ == "__main__":
    main()
