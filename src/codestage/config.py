"""The study config: typed, validated, loaded from YAML; the one place defaults live.

A study names its data sources, the tokenizer, the model shape, the two pretraining arms, the
instruction-tuning runs (NN/NC/CC and the mixing strategies), evaluation and report options.
Every section has defaults so a config only says what differs.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from codestage.domains import DOMAINS
from codestage.errors import ConfigError


class _Strict(BaseModel):
    """Unknown keys, a boolean or a float where an integer belongs (`steps: true`), a string
    where a number belongs and NaN/infinity are all errors naming the field."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]  # a non-blank string
PathList = Annotated[list[Name], Field(min_length=1, description="files, globs or directories (at least one)")]
NameList = Annotated[list[Name], Field(min_length=1)]  # when given, at least one entry (null = no filter)


class SourceConfig(_Strict):
    """A pretraining source: files/globs/directories; `group` is what schedules weight (text/code)."""

    paths: PathList
    group: Name = "text"
    weight: float = Field(1.0, gt=0, description="relative weight inside its group")
    text_field: Name = "text"
    max_docs: int | None = Field(None, gt=0)
    min_chars: int = Field(0, ge=0, description="drop shorter documents (counted in the store manifest)")
    max_chars: int = Field(5_000_000, gt=0, description="longer documents are bad input")
    languages: NameList | None = Field(None, description="keep only these languages ('text' = non-code)")
    licenses: NameList | None = Field(None, description="licence allow-list, where a record has a licence field")

    @model_validator(mode="after")
    def _chars_range(self) -> "SourceConfig":
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is above max_chars ({self.max_chars}): every document would be dropped")
        return self
    dedup: bool = Field(False, description="drop exact duplicates (whitespace-normalised content hash)")


class DataConfig(_Strict):
    """How stores are built and checked: workers (0 = all cores), strictness, test-set decontamination."""

    workers: int = Field(0, ge=0)
    strict: bool = Field(True, description="bad input stops the build (file:line); false = count and skip")
    decontam: bool = Field(True, description="report n-gram overlap of all training data with the eval tasks")
    decontam_n: int = Field(13, ge=1)


class InstructSetConfig(_Strict):
    """An instruction set in an upstream format (Alpaca JSON list, Code Alpaca, self-instruct seed, jsonl)."""

    paths: PathList
    group: Name = "text"
    weight: float = Field(1.0, gt=0)
    max_examples: int | None = Field(None, gt=0)


class PhaseConfig(_Strict):
    """Weights over groups or sources from the previous phase's end to `until` (fraction of training).

    With `end_weights`, weights move linearly from `weights` to `end_weights` across the phase.
    """

    until: float = Field(gt=0, le=1)
    weights: dict[str, float]
    end_weights: dict[str, float] | None = None


class MixtureConfig(_Strict):
    """Either a named preset schedule (`uniform`, `stepwise_increase`, ...) or explicit phases."""

    schedule: str | None = None
    ratio: str | None = Field(None, description="text:code for the `constant` preset, e.g. '2:1'")
    phases: list[PhaseConfig] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "MixtureConfig":
        if (self.schedule is None) == (self.phases is None):
            raise ValueError("give exactly one of `schedule` (a preset name) or `phases`")
        return self


class TrainConfig(_Strict):
    steps: int = Field(200, gt=0)
    batch_size: int = Field(8, gt=0, description="sequences per micro-batch")
    grad_accum: int = Field(1, gt=0)
    seq_len: int = Field(256, gt=1)
    lr: float = Field(3e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    log_every: int = Field(10, gt=0)
    checkpoint_every: int = Field(0, ge=0, description="0 = only at the end")
    keep_checkpoints: int = Field(1, ge=1, description="complete checkpoints kept in the run folder")
    global_batch_tokens: int | None = Field(None, gt=0, description="tokens per optimizer step over all processes; sets grad_accum")
    parallel: Literal["auto", "none", "ddp", "fsdp"] = Field("auto", description="auto: DDP for several processes, FSDP2 above 3B parameters")
    fsdp_keep_gathered: bool = Field(True, description="FSDP2: keep the gathered weights between the micro-batches of a "
                                     "step (fewer all-gathers; the memory of a full fp32 copy of the weights)")
    compile: Literal["auto", "on", "off"] = Field("auto", description="torch.compile (what one graph holds: compile_scope); auto = on CUDA")
    compile_scope: Literal["auto", "blocks", "decoder"] = Field(
        "auto", description="what one compiled graph holds: one transformer block (compiles in seconds), or the whole "
        "decoder (1-4% more tokens/s on an H200, for 20-45 s of compiling, 70-125 s with float8; one process only, "
        "as DDP/FSDP2 overlap gradient communication with the per-block graphs). auto: the decoder for one process "
        "on fixed-width batches (pretraining) without activation checkpointing, else blocks")
    activation_checkpointing: bool = False
    float8: bool = Field(False, description="float8 matmuls in the transformer blocks (torchao, tensorwise scaling; "
                         "CUDA compute capability 8.9+); pays from about 1B parameters")
    peak_tflops: float | None = Field(None, gt=0, description="for MFU in logs; default: the GPU's datasheet bf16 peak")
    tensorboard: bool = True
    snapshots: list[float] = Field(
        default_factory=list, exclude_if=lambda v: not v,  # absent from step keys unless given
        description="fractions of the run (in (0, 1), ascending) at which the model is also saved as an HF folder "
        "under snapshots/ (the ladder evaluates them); the final model is model/")

    @model_validator(mode="after")
    def _consistent_schedule(self) -> "TrainConfig":
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below steps ({self.steps}): the learning rate "
                             "would never leave its warm-up (set warmup_steps explicitly when you lower steps)")
        return self

    @model_validator(mode="after")
    def _snapshot_steps(self) -> "TrainConfig":
        if any(not 0 < f < 1 for f in self.snapshots):
            raise ValueError(f"snapshots: fractions must lie in (0, 1) (the final model is model/), got {self.snapshots}")
        if any(b <= a for a, b in zip(self.snapshots, self.snapshots[1:])):
            raise ValueError(f"snapshots: fractions must be ascending without repeats, got {self.snapshots}")
        steps = self.snapshot_steps()
        if len(set(steps)) != len(steps) or (steps and not 0 < min(steps) <= max(steps) < self.steps):
            raise ValueError(f"snapshots {self.snapshots} fall on steps {steps} of {self.steps}: each needs its own "
                             "step between the first and the last (more steps, or fewer snapshots)")
        return self

    def snapshot_steps(self) -> list[int]:
        """The optimizer step each snapshot fraction is written after (the nearest to fraction x steps)."""
        return [max(1, round(f * self.steps)) for f in self.snapshots]


class TokenizerConfig(_Strict):
    path: str | None = Field(None, description="a HF tokenizer directory to use instead of training one")
    vocab_size: int = Field(4096, ge=300)
    sample_chars_per_source: int = Field(1_000_000, gt=0)


class ModelConfig(_Strict):
    preset: str = "tiny"
    init_from: str | None = Field(None, description="start pretraining from this HF causal-LM directory")
    overrides: dict[str, Any] = Field(default_factory=dict)


class PretrainConfig(_Strict):
    train: TrainConfig = Field(default_factory=TrainConfig)
    arms: dict[str, MixtureConfig] = Field(
        default_factory=lambda: {
            "NL": MixtureConfig(schedule="text_only"),
            "CODE": MixtureConfig(schedule="constant", ratio="2:1"),
        }
    )


class InstructRunConfig(_Strict):
    base: str = Field(description="the pretraining arm to start from (NL or CODE)")
    mixture: MixtureConfig
    table: Literal["instruct", "mixing"] = Field("instruct", description="which report table the run belongs to")


class InstructConfig(_Strict):
    sets: dict[str, InstructSetConfig] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(steps=100, lr=1e-3, warmup_steps=10, seq_len=384))
    template: str = "alpaca"
    runs: dict[str, InstructRunConfig] = Field(default_factory=dict)


class HeldoutConfig(_Strict):
    """Held-out documents for a language-modelling loss per model: a source's documents after its
    first `skip_docs` (give the source `max_docs: skip_docs` so training never sees them)."""

    paths: PathList
    skip_docs: int = Field(0, ge=0)
    max_tokens: int = Field(200_000, gt=0)
    text_field: Name = "text"


class EvalConfig(_Strict):
    data_dir: str | None = Field(None, description="root with ceval_logic/, logiqa/, ... (default: bundled slice)")
    tasks: NameList = Field(default_factory=lambda: list(DOMAINS))
    sample: int | None = Field(None, gt=0, description="seeded subsample per task; null = full sets")
    protocol: Literal["paper", "lm-eval"] = "paper"
    shots: int = Field(0, ge=0)
    batch_size: int = Field(16, gt=0)
    max_new_tokens: int = Field(128, gt=0)
    execute: bool = True
    generate: bool = Field(True, description="code tasks generate programs (BLEU, pass@1); false: only the "
                           "reference's bits per byte is scored")
    device: str = "auto"
    lenient: bool = Field(False, description="score an exact duplicate record in a task file once (noted) "
                          "instead of stopping; conflicting duplicates stay an error")
    heldout: dict[str, HeldoutConfig] = Field(default_factory=dict, description="name -> held-out documents scored per model")


SbatchValue = str | int | bool
DEFAULT_GPUS_PER_STEP = {"pretrain": 1, "instruct": 1, "eval": 1, "ladder": 1}
_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_slurm_time(text: str | int, where: str = "time") -> int:
    """Minutes (rounded up) of a time in sbatch's formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
    m = _SLURM_TIME.match(str(text).strip())
    if not m:
        raise ConfigError(f"{where}: {text!r} is not a Slurm time (MM, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = m.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # MM:SS
        seconds = int(a) * 60 + int(b)
    else:  # MM
        seconds = int(a) * 60
    if seconds <= 0:
        raise ConfigError(f"{where}: {text!r} is no time at all")
    return math.ceil(seconds / 60)


def _check_time(value: str | int) -> str | int:
    try:
        parse_slurm_time(value)
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("time: ")) from None
    return value


SlurmTime = Annotated[str | int, AfterValidator(_check_time),
                      Field(description="MM, HH:MM:SS or D-HH:MM:SS (an integer: minutes)")]


class SlurmStageOptions(_Strict):
    """What differs for one stage's steps (e.g. evaluation on a cheaper partition, for less time)."""

    partition: Name | None = None
    account: Name | None = None
    qos: Name | None = None
    time: SlurmTime | None = None
    sbatch: dict[str, SbatchValue] = Field(default_factory=dict, description="more sbatch options for this stage")



class SlurmOptions(_Strict):
    """The sbatch options of every step's job; `stages` overrides some per stage."""

    partition: Name | None = None
    account: Name | None = None
    qos: Name | None = None
    time: SlurmTime = "24:00:00"
    gpus_per_node: int = Field(8, ge=1, description="a step asking more GPUs spans gpus / gpus_per_node nodes")
    cpus_per_gpu: int = Field(8, ge=1)
    mem_per_gpu_gb: float | None = Field(None, gt=0, description="none: the partition's default")
    cpus_per_step: int = Field(4, ge=1, description="CPUs of a step without GPUs (tokenizer, stores)")
    mem_per_step_gb: float | None = Field(None, gt=0)
    sbatch: dict[str, SbatchValue] = Field(default_factory=dict, description="any other sbatch option, every step")
    setup: list[str] = Field(default_factory=list, description="shell lines before each job (module load ...)")
    stages: dict[str, SlurmStageOptions] = Field(default_factory=dict)
    max_requeues: int = Field(3, ge=0, description="requeues of a job that reached its time limit")
    signal_delay_s: int = Field(90, ge=10, description="Slurm warns a job this long before its limit")



class ExecutorConfig(_Strict):
    """How a study's steps run (docs/cluster.md); never part of a step's key or of results.json.

    `kind`: inline (in the coordinator, one after another), local (each step a process on this
    machine, side by side on its GPUs) or slurm (each step a Slurm job); none: local where GPUs are
    visible, else inline. A step's stage is the first part of its name (`pretrain/NL` -> pretrain).
    """

    kind: Literal["inline", "local", "slurm"] | None = None
    retries: int = Field(1, ge=0, description="how many times a failed step is started again")
    max_parallel: int | None = Field(None, ge=1, description="local: at most this many steps at once "
                                     "(default: GPUs x the largest steps_per_gpu, 1 without GPUs)")
    gpus_per_step: dict[Name, Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: dict(DEFAULT_GPUS_PER_STEP),
        description="GPUs of each stage's steps, over the defaults pretrain/instruct/eval/ladder 1; stages not named get none")
    steps_per_gpu: dict[Name, Annotated[int, Field(ge=1, le=64)]] = Field(
        default_factory=dict, description="local: how many of a stage's one-GPU steps may share one GPU (default 1)")
    slurm: SlurmOptions = Field(default_factory=SlurmOptions)

    @field_validator("gpus_per_step")
    @classmethod
    def _over_defaults(cls, v: dict[str, int]) -> dict[str, int]:
        return {**DEFAULT_GPUS_PER_STEP, **v}

    @model_validator(mode="after")
    def _consistent(self) -> "ExecutorConfig":
        per_node = self.slurm.gpus_per_node
        for stage, gpus in self.gpus_per_step.items():
            if gpus > per_node and gpus % per_node:
                raise ValueError(f"gpus_per_step.{stage} = {gpus} spans several nodes: make it a multiple of "
                                 f"slurm.gpus_per_node ({per_node})")
        for stage, k in self.steps_per_gpu.items():
            if k > 1 and self.gpus_per_step.get(stage, 0) != 1:
                raise ValueError(f"steps_per_gpu.{stage} = {k}: steps that share a GPU ask for one GPU each, but "
                                 f"gpus_per_step.{stage} is {self.gpus_per_step.get(stage, 0)}")
        return self


class LadderRuleConfig(_Strict):
    """How each rung's shape, batch and learning rate follow from its size (docs/ladder.md, "The size
    rule"): depth L, width aspect_ratio x L (to a multiple of head_dim), heads of head_dim, SwiGLU about
    8/3 x width; learning rate and batch as power laws of the non-embedding parameters (Porian et al.
    2024, as the OLMo ladder and DataDecide use them)."""

    aspect_ratio: int = Field(64, gt=0, description="width / depth (d_model / n_layers)")
    head_dim: int = Field(64, gt=0, description="width per attention head; widths are multiples of it")
    lr_scale: float = Field(1.0, gt=0, description="multiplies the rule's learning rate 0.0047 (N / 108M)^(-1/3)")
    batch_multiple: int = Field(8, gt=0, description="global batch rows are a multiple of this")
    warmup_tokens_per_param: float = Field(1.0, ge=0, description="linear warm-up over this many tokens per parameter")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="cosine decay to this fraction of the peak")


class LadderTargetConfig(_Strict):
    params: float = Field(2.6e9, gt=0, description="non-embedding parameters of the model to predict")
    tokens: float = Field(4.2e10, gt=0)


class LadderFitConfig(_Strict):
    """Settings of the `ladder/fit` step (`codestage ladder fit` options of the same names)."""

    bootstrap: int = Field(1000, ge=0)
    seed: int = Field(0, ge=0)
    holdout: Name | None = Field("largest", description="backtest: largest, a params value, a run id (comma list); null: none")
    resample: Literal["runs", "residuals"] = "runs"
    share_exponents: bool = True
    step1_points: Literal["final", "all"] = "final"
    huber_delta: float = Field(1e-3, gt=0)
    last: int = Field(3, ge=2)
    workers: int = Field(0, ge=0, description="bootstrap processes (0: one per core)")


_SIZE = re.compile(r"^(\d+\.?\d*|\.\d+)(e[+-]?\d+)?([KMB]?)$", re.IGNORECASE)


def parse_size(size: str | int | float) -> float:
    """A parameter count: a number, or a string such as '3.2M', '800K', '1.3B', '3e6'."""
    if isinstance(size, bool):
        raise ValueError(f"{size!r} is not a parameter count")
    if isinstance(size, (int, float)):
        value = float(size)
    else:
        m = _SIZE.match(size.strip())
        if not m:
            raise ValueError(f"{size!r} is not a parameter count (e.g. 3.2M, 800K, 1.3B or 3200000)")
        value = float(m.group(1) + (m.group(2) or "")) * {"": 1, "K": 1e3, "M": 1e6, "B": 1e9}[m.group(3).upper()]
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{size!r} is not a positive parameter count")
    return value


class LadderConfig(_Strict):
    """A model ladder: small runs of the study's arms at several sizes and token budgets, evaluated at
    several checkpoints, fitted to predict the target scale (docs/ladder.md)."""

    sizes: list[str | int | float] = Field(
        min_length=2, description="non-embedding parameters per rung, e.g. [1.3M, 3.2M, 6.4M]; each becomes the "
        "nearest shape of the size rule")
    budgets: list[float] = Field(default_factory=lambda: [10.0, 20.0], min_length=1,
                                 description="training tokens per parameter; every size runs every budget")
    arms: NameList | None = Field(None, description="one or two pretraining arms; default NL and CODE where the "
                                  "study has both, else its first two; the fit's difference is second minus first")
    checkpoints: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0],
                                     description="fractions of each run evaluated, ascending, ending with 1.0 (the final model)")
    generate_intermediate: bool = Field(False, description="MBPP generation at intermediate checkpoints too "
                                        "(the reference's bits per byte is scored at every checkpoint regardless)")
    only: bool = Field(False, description="a ladder-only study: no full-size pretraining, instruction tuning or "
                       "their evaluations are planned")
    target: LadderTargetConfig = Field(default_factory=LadderTargetConfig)
    rule: LadderRuleConfig = Field(default_factory=LadderRuleConfig)
    fit: LadderFitConfig = Field(default_factory=LadderFitConfig)

    @field_validator("sizes")
    @classmethod
    def _positive_sizes(cls, v: list) -> list:
        for size in v:
            try:
                parse_size(size)
            except ValueError as exc:
                raise ValueError(f"sizes: {exc}") from None
        return v

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: list[float]) -> list[float]:
        if any(not b > 0 for b in v) or len(set(v)) != len(v):
            raise ValueError(f"budgets: tokens per parameter must be positive and distinct, got {v}")
        return v

    @field_validator("checkpoints")
    @classmethod
    def _checkpoints(cls, v: list[float]) -> list[float]:
        if not v or v[-1] != 1.0 or any(not 0 < f <= 1 for f in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError(f"checkpoints: ascending fractions in (0, 1] ending with 1.0 (the final model), got {v}")
        return v


class StudyConfig(_Strict):
    name: Name = "study"
    seed: int = Field(0, ge=0)
    sources: dict[str, SourceConfig]
    data: DataConfig = Field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    instruct: InstructConfig = Field(default_factory=InstructConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig, exclude=True,
                                     description="where steps run (docs/cluster.md); not in keys or results")
    ladder: LadderConfig | None = Field(None, description="a model ladder (docs/ladder.md); none by default")
    base_dir: Path = Field(Path("."), exclude=True, description="relative data paths resolve against this")

    @field_validator("sources")
    @classmethod
    def _some_sources(cls, v: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        if not v:
            raise ValueError("at least one pretraining source is needed")
        return v

    @model_validator(mode="after")
    def _some_arms(self) -> "StudyConfig":
        if not self.pretrain.arms:
            raise ValueError("pretrain.arms: at least one pretraining arm is needed")
        return self

    @model_validator(mode="after")
    def _ladder_arms(self) -> "StudyConfig":
        if self.ladder is None:
            return self
        if self.ladder.arms is None:
            arms = list(self.pretrain.arms)
            self.ladder.arms = ["NL", "CODE"] if {"NL", "CODE"} <= set(arms) else arms[:2]
        unknown = [a for a in self.ladder.arms if a not in self.pretrain.arms]
        if unknown:
            raise ValueError(f"ladder.arms: {', '.join(map(repr, unknown))} is not a pretraining arm "
                             f"({', '.join(self.pretrain.arms)})")
        if len(self.ladder.arms) > 2 or len(set(self.ladder.arms)) != len(self.ladder.arms):
            raise ValueError(f"ladder.arms: one or two distinct arms (the fit compares two), got {self.ladder.arms}")
        return self

    @model_validator(mode="after")
    def _runs_name_known_arms(self) -> "StudyConfig":
        for name, run in self.instruct.runs.items():
            if name in self.pretrain.arms:
                raise ValueError(f"instruct.runs.{name}: the name is already a pretraining arm; run names must be unique")
            if run.base not in self.pretrain.arms:
                raise ValueError(
                    f"instruct.runs.{name}.base: {run.base!r} is not a pretraining arm ({', '.join(self.pretrain.arms)})"
                )
        return self


def _format_validation_error(exc: ValidationError, origin: str) -> str:
    lines = [f"{origin}: invalid config"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], *, origin: str = "config", base_dir: Path | None = None) -> StudyConfig:
    """Validate a config mapping; errors name the field path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        cfg = StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origin)) from None
    if base_dir is not None:
        cfg.base_dir = base_dir
    return cfg


def load_config(path: Path | str) -> StudyConfig:
    """Load a study YAML; relative data paths resolve against the YAML's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:  # a directory, no permission, an I/O error
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: malformed YAML ({getattr(exc, 'problem', exc)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: malformed YAML (nested too deeply to read)") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise ConfigError(f"{path}: malformed YAML ({exc})") from None
    problem = _not_plain_data(data)
    if problem:
        raise ConfigError(f"{path}: {problem}; a config holds plain values (it is written into results as JSON)")
    return parse_config(data, origin=str(path), base_dir=path.parent.resolve())


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a key given twice in one mapping is an error (by default the
    last silently wins: a second `model:` would replace the first). `<<` merge keys may still be
    overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (also on line {seen[key]}; the later one would silently win)",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_MAX_VALUES = 1_000_000


class _NotPlain(Exception):
    pass


def _not_plain_data(data: Any) -> str | None:
    """Why YAML data cannot be a config: a `!!binary` scalar, a NaN or infinity (anywhere, also in
    free-form sections such as `model.overrides`), a recursive alias, or aliases that expand past a million values (an alias bomb, which would explode when results are written).
    Shared (aliased) values are visited once, so the check costs the file's size, not its expansion."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def walk(node: Any, where: str) -> int:
        if isinstance(node, bytes):
            raise _NotPlain(f"{where or '(top level)'}: binary (!!binary) values are not supported")
        if isinstance(node, float) and not math.isfinite(node):
            raise _NotPlain(f"{where or '(top level)'}: {node} is not a finite number")
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _NotPlain(f"{where or '(top level)'}: a recursive alias (the value contains itself)")
        active.add(key)
        total = 1
        for k, v in node.items() if isinstance(node, dict) else enumerate(node):
            total += walk(v, f"{where}.{k}" if where else str(k))
            if total > _MAX_VALUES:
                raise _NotPlain(f"{where or '(top level)'}: aliases expand to over {_MAX_VALUES:,} values (an alias bomb?)")
        active.discard(key)
        sizes[key] = total
        return total

    try:
        walk(data, "")
    except _NotPlain as exc:
        return str(exc)
    except RecursionError:
        return "nested too deeply to read"
    return None


def config_to_dict(cfg: StudyConfig) -> dict[str, Any]:
    """The resolved config as plain data (written into results for traceability)."""
    return cfg.model_dump(mode="json")
