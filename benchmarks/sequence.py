"""The sequence model's softmax: over the whole catalogue against sampled negatives.

    DECAYREC_DATA_MIRROR=/path/to/mirror python benchmarks/sequence.py [--dataset ml-1m]
        [--protocol P2] [--epochs 3] [--negatives 0 256 1024]

Each run trains ``train.sequence`` of params.yaml for ``--epochs`` epochs (no early stop) on
the protocol's validation phase, as ``decayrec train`` does, with ``negatives`` set (0: full
softmax), and reports its training seconds, validation NDCG@10 after each epoch and test
NDCG@10 with the same weights. Splits and item vectors are built when missing. One table,
then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.config import load_params  # noqa: E402
from flows.steps import ensure_splits, item_vectors  # noqa: E402
from models.protocols import encode, load_parts, tasks  # noqa: E402
from models.sequence import SequenceModel  # noqa: E402
from models.train import ranked_ndcg  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--protocol", default="P2", choices=["P1", "P2"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--negatives", type=int, nargs="+", default=[0, 256, 1024])
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml", dataset=args.dataset)
    ensure_splits(params)
    cfg = params.train
    vectors = item_vectors(params)
    phases = tasks(args.protocol, load_parts(params.split.out_dir, args.protocol), params.data.repeats)
    valid, test = (encode(phases[part]).sample(cfg.max_users, cfg.seed) for part in ("valid", "test"))
    runs = []
    for negatives in args.negatives:
        p = cfg.sequence.model_copy(update={"negatives": negatives, "epochs": args.epochs, "patience": args.epochs, "timeout_s": None})
        model = SequenceModel(item_vectors=vectors, params=p)
        curve = model.train(valid.data, monitor=lambda m: ranked_ndcg(m, valid))
        model.bind(test.data)
        runs.append({"negatives": negatives, "train_s": model.stats_["train_s"], "valid_ndcg_at_10": [round(c, 4) for c in curve],
                     "test_ndcg_at_10": round(ranked_ndcg(model, test), 4)})
        print(f"negatives {negatives or 'all':>6}: {runs[-1]['train_s']:8.1f} s, validation {runs[-1]['valid_ndcg_at_10']}, "
              f"test {runs[-1]['test_ndcg_at_10']}", flush=True)
    print(json.dumps({"dataset": args.dataset, "protocol": args.protocol, "epochs": args.epochs,
                      "items": int(valid.data.n_items), "runs": runs}))


if __name__ == "__main__":
    main()
