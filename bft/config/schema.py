"""Typed structured configs: the schema every composed Hydra config is validated against.

Each dataclass mirrors one config group under ``conf/`` and one module under ``bft/``.
Unknown keys and mistyped values fail at composition time, before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConfig:
    """The base model: a registry name (``smollm2_135m``, ``tiny``), a local folder or a hub id."""

    name: str = "smollm2_135m"
    revision: str | None = None
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    trust_remote_code: bool = False
    # prompt format: model (the tokenizer's own) | llama2_inst | chatml | path to a .jinja file (bft.models.chat_templates)
    chat_template: str = "model"


@dataclass
class SeedConfig:
    """Seed (instruction, output) pairs: ``embedded``, ``oasst1`` (hub) or a local JSONL/JSON/Parquet path."""

    source: str = "embedded"
    size: int | None = None  # subsample to this many pairs with ``run.seed``
    # "all": the subsample feeds every model; "forward": only M0/Mi/final use it, the backward model (and so the
    # augmentation) uses the whole seed, which lets a seed-size sweep share one augmentation artifact.
    size_scope: str = "all"
    instruction_field: str = "instruction"
    output_field: str = "output"
    hub_dataset: str = "OpenAssistant/oasst1"  # oasst1: a hub dataset id, or a local file of its message rows
    hub_files: str = "data/train-*.parquet"  # oasst1: the train split's data files in the repository (a glob)
    mirror: str | None = None  # oasst1: a local copy of the repository (huggingface-cli download --local-dir)
    language: str = "en"


@dataclass
class CorpusConfig:
    """Unlabelled web documents: ``embedded``, local files, a hub dataset's data files or a URL list (Dolma's)."""

    source: str = "embedded"  # embedded | a file, folder or glob | a hub dataset id (its files: glob or url_list)
    url_list: str | None = None  # a list of file URLs, one a line (Dolma: urls/v1_6.txt in the hub repo, a path, file:// or https://)
    mirror: str | None = None  # a local copy of the hub files or of the listed URLs (their URL paths, or flat)
    text_field: str = "text"
    id_field: str = "id"
    # documents read at most (null: no cap); with data.max_generated the corpus is read in rounds up to this bound
    max_documents: int | None = None
    min_chars: int = 200
    max_chars: int = 3000
    segment: bool = True  # split long documents at paragraph boundaries into <= max_chars segments
    dedup: bool = True
    minhash_threshold: float = 0.8
    minhash_num_perm: int = 128
    max_symbol_ratio: float = 0.3
    max_caps_line_ratio: float = 0.5
    min_mean_line_chars: float = 20.0
    # datatrove engine (bft/data/corpus): format, language, extra filters, executor
    format: str = "auto"  # auto | jsonl | parquet | warc (a folder/glob/file; auto = from the file names)
    glob: str | None = None  # file pattern inside a folder or hub source, e.g. "en/c4-train.*.json.gz"
    languages: list[str] = field(default_factory=lambda: ["en"])  # [] = keep every language
    language_threshold: float = 0.5  # py3langid probability of the top language
    filters: list[str] = field(default_factory=list)  # gopher_repetition, gopher_quality, c4, fineweb, humpback
    segment_by: str = "paragraphs"  # paragraphs | headers (Humpback: the text under each header)
    perplexity_bucket: str | None = None  # BFT: Dolma's CC bucket (head | middle | tail): its files, cc_en_head-NNNN.json.gz
    bucket_field: str | None = None  # read the bucket from this record field instead (a record without it is dropped)
    tokenizer: str | None = None  # BFT: drop documents over max_tokens tokens of this tokenizer
    max_tokens: int | None = None
    executor: str = "local"  # local | slurm | ray
    workers: int = 1
    tasks: int | None = None  # None: one task per input file
    executor_options: dict[str, Any] = field(default_factory=dict)  # e.g. partition, time for slurm
    filter_examples: int = 3  # removed examples kept per filter in filters.json


@dataclass
class RewriterConfig:
    """Who writes the answers of kept documents (resolved in ``bft.rewriter.source``): ``source=model`` (the model
    ``name``; null = the base ``model``), ``seed_model`` (M0, BFT's ablation) or ``none`` (filtering only)."""

    source: str = "model"  # model | seed_model | none
    name: str | None = "smollm2_135m"
    chat_template: str = "model"  # as model.chat_template, for the rewriter (ignored for source none / seed_model)
    mode: str = "rewrite"  # rewrite | distill
    temperature: float = 1.0
    top_p: float = 0.9
    max_new_tokens: int = 256
    keep_unparsed: bool = False  # if [RES]..[/RES] is missing, drop the pair (False) or keep raw text
    prefill_res_tag: bool = True  # start the assistant turn with "[RES]" so small models answer inside the tags


@dataclass
class CurationConfig:
    """Self-curation: the seed model rates each (instruction, document) pair on the 1-5 rubric."""

    enabled: bool = True
    scoring: str = "generate"  # generate | logprob | generate_n
    threshold: float | None = 5.0  # keep expected score >= threshold
    top_k: int | None = None
    top_fraction: float | None = None
    iterations: int = 1  # 1 = M0 only; 2 = Humpback's M0 -> M1 re-scoring
    n_samples: int = 4  # for generate_n
    temperature: float = 1.0
    top_p: float = 0.9
    max_new_tokens: int = 96
    labels: str | None = None  # JSONL with document id/instruction and a human quality label


@dataclass
class SFTStageConfig:
    """Hyperparameters of one fine-tuning run (backward, seed/Mi or final model)."""

    lr: float = 2e-4
    lr_floor_ratio: float = 0.1  # final lr = lr * ratio (Humpback: 9e-6 / 1e-5 = 0.9)
    schedule: str = "cosine"  # cosine | linear | constant
    warmup_ratio: float = 0.05
    weight_decay: float = 0.1
    dropout: float = 0.1
    batch_size: int = 8  # effective batch (micro_batch_size * accumulation * devices)
    micro_batch_size: int = 2
    max_steps: int = 30
    max_seq_len: int = 512
    grouping: str = "length"  # length (length-grouped dynamic padding) | packing | none


@dataclass
class SFTConfig:
    backward: SFTStageConfig = field(default_factory=SFTStageConfig)
    seed: SFTStageConfig = field(default_factory=SFTStageConfig)
    final: SFTStageConfig = field(default_factory=SFTStageConfig)
    seed_tag: str = "Answer in the style of an AI Assistant."
    web_tag: str = "Answer with knowledge from web search."


@dataclass
class PeftConfig:
    method: str = "lora"  # lora | full
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0  # adapter input dropout (conf/peft/lora.yaml says why it is off)
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])


@dataclass
class TrainerConfig:
    """Passed to ``lightning.Trainer``: accelerator, strategy (ddp, fsdp, deepspeed_stage_2, ...)."""

    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "bf16-mixed"
    # attention implementation while training (transformers' attn_implementation); null keeps the model's own
    # (sdpa). conf/trainer/cpu.yaml picks bft_causal_blocks (bft.sft.attention): eager, which was 12-15% faster
    # than SDPA's CPU flash kernel for 512-token LoRA steps, minus the masked upper triangle
    attention: str | None = None
    # torch.compile each decoder layer and the output head + loss (bft.sft.compile), for runs that will train on
    # at least compile_min_tokens tokens (compilation costs ~65 s on a cold inductor cache, ~5 s on a warm one)
    compile: bool = False
    compile_min_tokens: int = 0
    gradient_clip_val: float = 1.0
    log_every_n_steps: int = 5
    enable_progress_bar: bool = True
    checkpoint_every_n_steps: int = 10
    # how a training stage runs (bft.sft.launch): inprocess (in the pipeline process; one CPU device only), local
    # (its own job on this machine: one process, Lightning starts one more per further device), slurm (a Slurm job
    # through submitit, one task per device on num_nodes nodes), auto (inprocess for one CPU device, else local)
    launcher: str = "auto"
    # launcher=slurm: submitit executor parameters (slurm_partition, timeout_min, slurm_account, cpus_per_task, ...)
    slurm: dict[str, Any] = field(default_factory=dict)


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    top_p: float = 0.9
    max_new_tokens: int = 64
    # an instruction cut at max_new_tokens (no end-of-turn token) is dropped and counted (unfinished_instructions);
    # true keeps it (debug=smoke: a random model never ends one)
    keep_unfinished: bool = False


@dataclass
class ServerConfig:
    """Generation through an OpenAI-compatible server (bft.generation.served, on datatrove's inference servers).

    ``kind=endpoint``: a server that is already running (``vllm serve``, SGLang, TGI, llama.cpp's server,
    ``transformers serve``, a hosted API) at ``url``. ``kind=vllm`` / ``sglang``: each stage (each worker) starts
    one through datatrove, on the stage's model, with generation.tensor_parallel_size / data_parallel_size.
    Placement only: never part of an artifact key (as the backend choice)."""

    kind: str = "endpoint"  # endpoint | vllm | sglang
    url: str | None = None  # kind=endpoint: the base URL, e.g. http://gpu-node-12:8000/v1
    api_key_env: str | None = None  # the NAME of the environment variable holding the key (never the key)
    # the model name the endpoint serves; null: the stage's model (hub id, or its folder; a trained adapter is
    # merged into a full-model folder once, so a server that loads models by path can serve it)
    model: str | None = None
    # the stages sent to the server when generation.backend is hf or vllm (augment, curate, rewrite, eval_outputs,
    # base_outputs); with generation.backend=served every stage is
    stages: list[str] = field(default_factory=list)
    max_concurrent: int = 64  # requests in flight per worker
    request_timeout_s: float = 600.0
    start_timeout_s: float = 1800.0  # kind=vllm/sglang: how long the started server may take to become ready
    args: dict[str, Any] = field(default_factory=dict)  # kind=vllm/sglang: more server flags (enforce-eager: true)
    # fields added to every completion request, for a server that needs more than OpenAI's to sample as asked:
    # transformers serve samples only where the model's generation_config says do_sample (and applies its top_k):
    # +generation.server.extra_body.generation_config='{"do_sample": true, "top_k": 0}'
    extra_body: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationConfig:
    backend: str = "hf"  # hf | vllm | served (every stage through generation.server)
    # where the hf backend and the local judge run: auto (cuda when this machine has a CUDA GPU, else cpu) | cpu |
    # cuda | cuda:N. Not hashed into artifact keys (placement, like workers; the manifest records the device used)
    device: str = "auto"
    batch_size: int = 64  # hf backend on CPU: rows per batch (on CUDA: sized from free GPU memory, bft.generation.gpu_memory)
    max_batch_tokens: int | None = 32768  # hf on CPU: rows x (prompt + new tokens) per batch (CUDA: from free memory)
    dtype: str = "auto"  # auto = bfloat16 where the CPU/GPU supports it
    shard_size: int = 64  # records per resumable shard
    augment: SamplingConfig = field(default_factory=SamplingConfig)
    # vLLM placement (backend=vllm; bft.generation.vllm.engine_kwargs passes them to vllm.LLM)
    tensor_parallel_size: int = 1  # GPUs each model replica is split over
    data_parallel_size: int = 1  # model replicas (vLLM's offline data parallelism; 1 = one replica)
    gpu_memory_utilization: float = 0.9  # fraction of each GPU's memory vLLM may take (weights + KV cache)
    max_model_len: int | None = None  # prompt + completion tokens per sequence; None = the model's context length
    vllm: dict[str, Any] = field(default_factory=lambda: {"enable_prefix_caching": True})  # any other vllm.LLM kwargs
    server: ServerConfig = field(default_factory=ServerConfig)


@dataclass
class WorkersConfig:
    """How generation stages spread their shards over processes (bft.workers); never part of an artifact key."""

    engine: str = "inprocess"  # inprocess | submitit | ray
    count: int = 1  # workers (submitit array tasks / Ray tasks); each claims shards until none is left
    cluster: str = "local"  # submitit: local (processes on this machine) | slurm (array job) | debug
    threads_per_worker: int | None = None  # torch threads per worker; null: cores / count for local processes
    poll_seconds: float = 2.0  # how often the driving process refreshes progress while workers run
    # cluster=slurm: what each array task asks for; null = what the stage needs (bft.workers.slurm)
    partition: str | None = None  # Slurm partition (null: the cluster's default)
    gpus_per_task: int | None = None  # null: vLLM's tensor x data parallel, 1 for hf on cuda, else none
    cpus_per_task: int | None = None  # null: threads_per_worker, else 2 (8 per GPU)
    mem_gb: int | None = None  # null: from the model's size (weights twice in float32 + 4 GB, at least 8)
    timeout_min: int = 1440  # each task's time limit
    pending_timeout_min: float | None = 60.0  # a job still pending after this long is cancelled, one line says why
    submitit: dict[str, Any] = field(default_factory=dict)  # more submitit parameters (slurm_account, slurm_qos, ...)
    ray: dict[str, Any] = field(default_factory=dict)  # address (null: local Ray), num_cpus, num_gpus per worker


@dataclass
class EvalConfig:
    set: str = "embedded"  # embedded | ae1 | ae2 | path to alpaca_eval-format JSON/JSONL
    annotator: str = "local"  # local | openai_compatible | alpaca_eval_gpt4 | any alpaca_eval name or configs.yaml path
    judge_model: str | None = "smollm2_135m"  # the local annotator's model; null = the base ``model``
    reference: str = "base"  # dataset (the set's own reference outputs) | base | <run folder>
    max_instances: int | None = None
    # tag appended to each eval instruction (bft.eval.inference_tags): seed (sft.seed_tag, S_a) | web (sft.web_tag,
    # S_w) | both (S_a then S_w: HB's best, HB Table 4) | none | a literal tag sentence; resolved to its text before
    # planning, so the eval outputs' key hashes the text the model is really given
    inference_tag: str = "seed"
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    lc_weights_dir: str | None = None
    judge_orders: int = 2  # the local judge sees each pair in 1 random order or in both, combined (no position bias)
    judge_url: str | None = None  # annotator=openai_compatible: the served judge's base URL (judge_model = served name)
    judge_api_key_env: str | None = None  # openai_compatible: NAME of the env variable holding the key (null: no key)
    judge_api_scheme: str = "weighted_alpaca_eval_gpt4_turbo"  # openai_compatible: alpaca_eval prompt + parser to use


@dataclass
class LoggerConfig:
    backend: str = "wandb"
    mode: str = "offline"  # offline | online | disabled
    project: str = "bft"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    sample_rows: int = 20
    upload_artifacts: bool = False  # true: W&B artifacts carry the store's files (fetchable after sync); false: file:// references


@dataclass
class DataConfig:
    on_error: str = "raise"  # raise | skip: malformed input rows fail with file:line, or are skipped and counted
    # target and cap of generated pairs in the final training set (the papers' 3.2K..51.2K): the corpus is read in
    # rounds until this many survive curation, rewriting and decontamination, or the shortfall is stated (bft.pipeline.target)
    max_generated: int | None = None
    baseline_file: str | None = None  # train on this instruction dataset instead of generated data (baselines)


@dataclass
class CostConfig:
    """The dry run's accelerator-hours estimate (bft.pipeline.cost): FLOPs / (peak of ``gpu`` x ``mfu``)."""

    gpu: str = "A100-80GB"  # a name in bft.pipeline.cost.PEAK_TFLOPS
    mfu: float = 0.4  # achieved fraction of the peak


@dataclass
class RunConfig:
    seed: int = 0
    artifacts_dir: str = "artifacts"
    name: str = "default"
    dry_run: bool = False  # print the plan (stages, models, records, tokens, cost, cached or not) and stop
    cost: CostConfig = field(default_factory=CostConfig)


@dataclass
class BftConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    # Per-role base models (bft.pipeline.roles); null = ``model``. Set one with a package override in an
    # experiment's defaults, e.g. ``- /model@backward_model: llama2_70b``, or ``+backward_model.name=...``.
    backward_model: ModelConfig | None = None  # trained on (output -> instruction) pairs
    curation_model: ModelConfig | None = None  # M0 (seed model) and M_i, the curation judges
    final_model: ModelConfig | None = None  # the model that is fine-tuned and evaluated
    seed: SeedConfig = field(default_factory=SeedConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    rewriter: RewriterConfig = field(default_factory=RewriterConfig)
    curation: CurationConfig = field(default_factory=CurationConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    method: str = MISSING  # name of the method preset (conf/method)
    tags: list[str] = field(default_factory=list)


def register_configs() -> None:
    """Register the schema so ``conf/config.yaml`` can list it first in its defaults (once per process: storing
    converts the schema, 0.1-0.2 s)."""
    cs = ConfigStore.instance()
    if "bft_schema.yaml" not in cs.list(""):
        cs.store(name="bft_schema", node=BftConfig)
