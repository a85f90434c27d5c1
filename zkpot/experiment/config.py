"""What an experiment runs: scenarios, participants, which of them attack and how."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

# behaviours a participant can have (zkpot.devnet.run.BEHAVIOURS minus "honest")
ATTACKS = ("label_flip", "scaled", "random", "free_ride", "copy", "silent", "drop_mask", "mask_cheat")
SECURE_ONLY = ("drop_mask", "mask_cheat")  # attacks on the masking phases of secure aggregation


@dataclass
class ExperimentConfig:
    out_dir: Path
    participants: int = 10
    validators: int = 4
    rounds: int = 4
    fractions: tuple[float, ...] = (0.0, 0.2, 0.3)
    attacks: tuple[str, ...] = ("label_flip",)   # attacker i behaves as attacks[i % len(attacks)]
    alpha: float = 0.5
    seed: int = 7
    local_epochs: int = 0                          # 0: the prover's default (zkpot.zkp.prove)
    test_set_size: int = 16                        # the task's public test set (proofs)
    min_correct: int = 0                           # 0: the task default
    arch: str = "mlp:64-16-10"                  # the task's zkpot.zkp.arch spec (on the digits: 64 inputs, 10 classes)
    weight_bound: float = 1.0
    base_port: int = 27300
    round_deadline_blocks: int = 600               # the task's; silent attackers make every round wait for it
    zkpot: bool = True                             # False: only the in-process scenarios
    secure_aggregation: bool = False               # the ZKPoT runs' task: pairwise-masked aggregation
    secagg_threshold: int = 0                      # 0: zkpot.secagg.default_threshold
    resume: bool = False                           # reuse the real-services reports an earlier run wrote
    devnet_dir: Path | None = None                 # default OUT/devnet-<participants>p-<rounds>r-...
    test_set_file: Path | None = None              # the public test set from a user's file (all of it)
    train_data: Path | None = None                 # participants' shards cut from a user's file
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.participants < 1 or self.validators < 1 or self.rounds < 1:
            raise ValueError("participants, validators and rounds must be at least 1")
        if any(not 0.0 <= f <= 0.5 for f in self.fractions):
            raise ValueError("attacker fractions must be in 0..0.5")
        bad = [a for a in self.attacks if a not in ATTACKS]
        if bad or not self.attacks:
            raise ValueError(f"attacks must be among {', '.join(ATTACKS)}; got {bad or 'none'}")
        from zkpot.zkp import arch, data

        try:
            model_arch = arch.parse(self.arch)
        except arch.ArchError as exc:
            raise ValueError(f"--arch: {exc}") from None
        if (self.test_set_file is None) != (self.train_data is None):
            raise ValueError("--test-set and --train-data go together (a user's data, or the digits)")
        if self.test_set_file is None and not data.takes_digits(model_arch):
            raise ValueError(f"--arch {model_arch.spec} takes {model_arch.n_features} features and "
                             f"{model_arch.n_classes} classes, not the digits': pass --test-set and --train-data")
        if not self.secure_aggregation and any(a in SECURE_ONLY for a in self.attacks):
            raise ValueError(f"{', '.join(SECURE_ONLY)} attack secure aggregation: add --secure-aggregation")

    def devnet_path(self) -> Path:
        if self.devnet_dir is not None:
            return self.devnet_dir
        # the devnet reuses its task, keys and shards across scenarios: key the folder by what shapes them
        return self.out_dir / (f"devnet-{self.participants}p-{self.validators}v-{self.rounds}r-"
                               f"t{self.test_set_size}-k{self.min_correct}-d{self.round_deadline_blocks}-a{self.alpha:g}-s{self.seed}"
                               + (f"-secure{self.secagg_threshold or ''}" if self.secure_aggregation else "")
                               + ("" if self.arch == "mlp:64-16-10" else "-" + self.arch.replace(":", "_"))
                               + ("" if self.test_set_file is None else f"-{self.test_set_file.stem}"))

    def as_json(self) -> dict:
        out = asdict(self)
        out["out_dir"] = str(self.out_dir)
        out["devnet_dir"] = str(self.devnet_path())
        for key in ("test_set_file", "train_data"):
            out[key] = None if out[key] is None else str(out[key])
        return out


def attackers(config: ExperimentConfig, fraction: float) -> dict[str, str]:
    """Participant name -> behaviour for this fraction: the first round(fraction * n) participants.

    The first participants are the ones that operate validators (p_j runs v_j for j < validators),
    so attackers are in a position to win leadership if the protocol let them.
    """
    k = int(round(fraction * config.participants + 1e-9))
    return {f"p{i}": config.attacks[i % len(config.attacks)] for i in range(k)}


def label(kind: str, fraction: float) -> str:
    return f"{kind}-{round(100 * fraction)}%"
