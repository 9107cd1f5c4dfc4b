"""LoRA banks on the crossbar, the fused layer and the adaptation methods (LoRAFusion and its baselines).

What this package owns (DESIGN section 5):

- `lora`: rank-r LoRA on linear layers (`attach_lora`, `train_lora`), `bank`: `LoRABank` with safetensors
  save/load and `build_bank`;
- `deploy`: `program_bank` (the bank's stacked A and B written into analog arrays once, plus the one-time
  calibration read-out) and `attach_fusion`;
- `fused`: `FusedLinear` (analog base + analog bank + digital coefficients and DoRA magnitude), `reference`: the
  same math on dense matrices;
- `registry`: methods registered by name with their own config dataclass (`register_method`), peft-style;
  `methods/`: the built-in ones (`zero_shot`, `fusion`, `lorahub`, `lora_program_once`, `lora_in_situ`,
  `lora_digital`, `full_finetune`, and the finer zero-write mixes `fusion_rank`, `fusion_core`, `fusion_gate` on
  `methods.mixing`'s layers), sharing one training loop (`loop`) and recording their `adapt` phase in the ledger
  (`accounting`); `trainers.adapt` runs one;
- `params`: trainable-parameter counts from layer shapes alone.

Imports `energy` and `crossbar` only.
"""


from fusion.analog_lora import AnalogLoRALinear
from fusion.bank import BANK_FORMAT_VERSION, LoRABank, build_bank
from fusion.deploy import (
    BankArrays,
    FusionLayers,
    ProgrammedBank,
    attach_fusion,
    calibrate_deployed_adc,
    calibrate_norms,
    detach_fusion,
    program_bank,
)
from fusion.fused import FusedCalibration, FusedLinear, calibrate
from fusion.loop import evaluate_loss
from fusion.lora import LoRALinear, attach_lora, detach_lora, extract_lora, find_linear_layers, lora_layers, train_lora
from fusion.methods.fused_methods import FusionConfig, LoraHubConfig
from fusion.methods.lora_methods import AnalogLoRAConfig, FullFinetuneConfig, LoRAConfig, LoRAInSituConfig
from fusion.methods.mixing import CoefficientGate, GatedLinear, MixedLinear, attach_gate, attach_mixing
from fusion.methods.mixing_methods import FusionCoreConfig, FusionGateConfig, FusionRankConfig
from fusion.params import (
    LayerShape,
    coefficient_groups,
    count_trainable,
    default_block_of,
    fusion_trainable_params,
    lora_trainable_params,
    t5_attention_shapes,
)
from fusion.reference import FUSION_FORMS, fused_delta, fused_row_norm, fused_weight
from fusion.registry import (
    METHODS,
    AdaptContext,
    AdaptResult,
    Method,
    MethodConfig,
    TrainingConfig,
    get_method,
    method_names,
    option,
    register_method,
)
from fusion.trainers import adapt, split_few_shot

__all__ = [
    "BANK_FORMAT_VERSION",
    "FUSION_FORMS",
    "METHODS",
    "AdaptContext",
    "AdaptResult",
    "AnalogLoRALinear",
    "FullFinetuneConfig",
    "FusionConfig",
    "AnalogLoRAConfig",
    "CoefficientGate",
    "FusionCoreConfig",
    "FusionGateConfig",
    "FusionRankConfig",
    "GatedLinear",
    "MixedLinear",
    "LoRAConfig",
    "LoRAInSituConfig",
    "LoraHubConfig",
    "Method",
    "MethodConfig",
    "TrainingConfig",
    "BankArrays",
    "FusedCalibration",
    "FusedLinear",
    "FusionLayers",
    "LayerShape",
    "LoRABank",
    "LoRALinear",
    "ProgrammedBank",
    "adapt",
    "attach_fusion",
    "attach_gate",
    "attach_mixing",
    "calibrate_deployed_adc",
    "calibrate_norms",
    "attach_lora",
    "build_bank",
    "calibrate",
    "coefficient_groups",
    "count_trainable",
    "default_block_of",
    "detach_fusion",
    "detach_lora",
    "evaluate_loss",
    "extract_lora",
    "find_linear_layers",
    "fused_delta",
    "fused_row_norm",
    "fused_weight",
    "fusion_trainable_params",
    "get_method",
    "lora_layers",
    "lora_trainable_params",
    "method_names",
    "option",
    "program_bank",

    "register_method",
    "split_few_shot",
    "t5_attention_shapes",
    "train_lora",
]
