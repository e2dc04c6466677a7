"""The [training] settings section, declared once with help on every field.

RoundConfig (training/config.py) carries it into a round; app/settings.py composes it."""

from typing import Literal

from pydantic import Field

from generation.sections import Section


class TrainingSettings(Section):
    """[training]: DPO (or KTO) rounds: which pairs, how to train, when to run and when to deploy."""

    method: Literal["dpo", "kto"] = Field("dpo", description=(
        "How a round learns from its pairs: 'dpo' (TRL's DPOTrainer on each pair) or 'kto' (TRL's KTOTrainer: each "
        "pair gives two unpaired examples, the chosen response desirable and the rejected one undesirable, with "
        "KTO's default weights of 1.0, right for classes that are always balanced). beta, the reference, LoRA and "
        "the held-out evaluation apply to both; loss_type is DPO's alone (KTO rounds use TRL's 'kto' loss)."))

    judge_labels: Literal["never", "fill", "always"] = Field(
        "never", description="LLM-judge labels in training pairs: 'never'; 'fill' only comparisons no human has "
                             "labelled; 'always' any comparison that human and imported labels leave unresolved.")
    min_pairs: int = Field(16, ge=1, description="A round refuses to start with fewer new training pairs than this.")
    replay_fraction: float = Field(0.25, ge=0, le=10, description="Older, already trained-on pairs replayed in a "
                                                                  "round, as a share of its new pairs.")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="Share of prompts held out for evaluation (chosen "
                                                              "by a hash of the prompt, so fixed across rounds).")
    beta: float = Field(0.1, gt=0, description="DPO beta: how far the policy may move from the reference.")
    loss_type: str = Field("sigmoid", description="TRL DPO loss type ('sigmoid', 'ipo', 'hinge', 'robust', ...).")
    learning_rate: float = Field(5e-6, gt=0, description=(
        "Peak learning rate of the round. 5e-6 suits full DPO fine-tuning of a real model (about 1e-6 to 1e-5 "
        "for 1B-70B parameters; higher forgets what the model knew). LoRA trains few weights from zero and "
        "wants 10-100x more (5e-5 to 5e-4). A tiny model needs about 5e-4 to move in a few steps: the demo "
        "workdir's prefloop.toml sets that."))
    epochs: float = Field(1.0, gt=0, description="Epochs over the round's pairs (ignored when max_steps > 0).")
    max_steps: int = Field(0, ge=0, description="Optimizer steps per round; 0 means train for `epochs`.")
    batch_size: int = Field(8, ge=1, description="Pairs per forward and backward pass; an optimizer step takes "
                                                 "batch_size x gradient_accumulation_steps pairs.")
    gradient_accumulation_steps: int = Field(1, ge=1, description=(
        "Batches whose gradients add up before each optimizer step: a step then learns from batch_size x this many "
        "pairs while memory holds the activations of only batch_size at a time; each step takes this many passes "
        "(with max_steps, a round also consumes this many times more pairs)."))
    gradient_checkpointing: bool = Field(False, description=(
        "Keep only some activations in the forward pass and recompute the rest in the backward pass: activation "
        "memory drops several-fold (longer max_length, bigger batches fit) for about a third more compute per step."))
    max_length: int = Field(512, ge=8, description="Longest prompt + response in tokens; longer ones are cut.")
    lora: bool = Field(False, description="Train a LoRA adapter (peft) on the parent instead of all weights.")
    lora_rank: int = Field(16, ge=1, description="LoRA rank r (used when lora is true).")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha scaling (used when lora is true).")
    weights_dtype: Literal["float32", "bfloat16"] = Field("float32", description=(
        "How a full fine-tuning round holds the weights on a GPU. 'float32' keeps float32 weights and computes in "
        "bf16 (about 16 bytes per parameter with AdamW: weights, gradients, two moments). 'bfloat16' holds all of "
        "it in bf16 (about 8 bytes per parameter) but rounds away updates finer than bf16 can hold: at learning "
        "rates near 5e-6 a round barely moves the model (the tiny model's held-out margin after 8 steps: 0.004 in "
        "bf16, 0.22 in float32). LoRA rounds keep the frozen base in bf16 and train the adapter in float32 either "
        "way; the CPU always trains in float32."))
    load_in_4bit: bool = Field(False, description=(
        "QLoRA: load the parent's frozen weights quantized to 4 bits (NF4, double quantization) and train the LoRA "
        "adapter on them: about a quarter of their bf16 memory, for slower steps and a little quantization noise. "
        "Needs a LoRA round (lora true), a CUDA GPU and the bitsandbytes package; the adapter is saved as in any "
        "LoRA round."))
    reference: Literal["parent", "initial"] = Field(
        "parent", description="DPO reference model: 'parent' (the round's starting version) or 'initial' (v0). "
                              "LoRA rounds always use the parent (the adapter switched off).")
    precompute_ref_log_probs: bool = Field(
        True, description="Compute the reference log-probs once before training, so the reference model is not "
                          "kept in memory while training.")
    eval_max_pairs: int = Field(256, ge=0, description="Most held-out pairs scored before and after a round.")
    probe_prompts: int = Field(16, ge=0, description="Held-out prompts sampled before and after a round to measure "
                                                     "response length and EOS rate (0 skips the probes).")
    probe_samples: int = Field(2, ge=1, description="Samples per probe prompt.")
    auto_every: int = Field(0, ge=0, description="Start a round automatically after this many newly resolved "
                                                 "pairs (0 turns automatic rounds off).")
    auto_retry_s: float = Field(60.0, ge=0, description="After a failed automatic round, wait this long before the "
                                                        "next automatic try; the wait doubles with each failure "
                                                        "in a row.")
    auto_retry_max_s: float = Field(3600.0, ge=0, description="The longest wait between failed automatic rounds.")
    auto_max_failures: int = Field(3, ge=0, description="Pause automatic rounds after this many failures in a row, "
                                                        "until an operator resumes them (console, or `prefloop "
                                                        "rounds --resume-auto`); 0 never pauses.")
    auto_deploy: bool = Field(False, description="Deploy a round's version automatically when it passes the gate.")
    deploy_min_accuracy: float = Field(0.0, ge=0, le=1, description="Gate for automatic deploys: a round is "
                                                                    "not deployed when its held-out pairs show its "
                                                                    "implicit-reward accuracy below this (the 95% "
                                                                    "Wilson interval's upper end is under it), nor "
                                                                    "when it has no held-out pairs to judge (0 "
                                                                    "means no gate).")
    stale_after_s: float = Field(120.0, gt=0, description="A running round whose heartbeat is older than this (or "
                                                          "whose process is gone) is marked failed.")
    worker_idle_s: float = Field(300.0, ge=0, description=(
        "Rounds run in a warm round process that stays up this long after a round with torch, transformers and "
        "TRL loaded, so the next round starts at once instead of spending ~10 s importing them (logs/round-N.log "
        "per round, logs/round-worker.log for the process). On a GPU it keeps a CUDA context (a few hundred MB) "
        "while it waits. 0 starts a fresh process for every round."))
    seed: int = Field(0, description="Seed for replay sampling and training.")
    win_rate_judge: bool = Field(False, description="Evaluate each round's win-rate against its parent with the "
                                                    "[judge] settings (both orders, ties count half).")
    num_processes: int = Field(1, ge=1, description=(
        "Processes a round trains in, one per GPU: above 1 the round runs under `accelerate launch` (data parallel: "
        "each process holds the model and trains on its share of every batch, so a step takes num_processes x "
        "batch_size pairs), and needs as many GPUs. Rank 0 alone writes the run, the version folder and the report. "
        "On CPU the processes talk over gloo, which is for testing."))
    fsdp: bool = Field(False, description=(
        "With num_processes > 1 on GPUs: shard the weights, gradients and optimizer state across the processes "
        "(FSDP), for a model whose training does not fit on one GPU (full fine-tuning with AdamW holds about 16 bytes "
        "per parameter; each GPU then holds its share). Each process first loads the weights on its GPU, so they "
        "must fit there. Ignored with one process, and on CPU (data parallel there)."))
    handoff: Literal["auto", "always", "never"] = Field("auto", description=(
        "Sharing the device with the generator (`serve --generate`, `generate --watch`) on the same machine: the "
        "round asks for it through the database, the generator sleeps (vLLM sleep mode level 1: weights to CPU "
        "memory, KV cache freed; the hf backend moves its weights to CPU memory) and wakes when the round ends, on "
        "the version deployed then. 'auto' hands CUDA GPUs over; 'always' also the CPU (the generator pauses and "
        "leaves the cores to the round); 'never' trains beside a generator that keeps its memory."))
    handoff_wait_s: float = Field(120.0, ge=0, description=(
        "How long a round waits for the generator on its device to sleep (it does between two batches). After "
        "that the round trains beside it and says so in its report; 0 does not wait."))
