"""Stage probe@<model>-<dataset>: linear probes on frozen features (starting weights and the CIFAR-10 checkpoint)
and few-shot curves."""

from cifarbench.pipeline import model_entry, probe


def main(s):
    result, seconds = probe.run(s)
    shots = ", ".join(f"{k}-shot {v:.3f}" for k, v in result["fewshot_top1"].items())
    print(
        f"{s.model} on {s.dataset}: linear probe from {result['weights']} weights {result['probe_top1']:.4f} "
        f"(C {result['probe']['c']:g}), from the CIFAR-10 checkpoint {result['probe_from_cifar10_top1']:.4f}; "
        f"{shots}; {seconds['total_seconds']:.1f} s ({seconds['features_seconds']:.1f} s features)"
    )


if __name__ == "__main__":
    model_entry.run(main, __doc__, args=("model", "dataset"))
