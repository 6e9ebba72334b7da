"""Native Phi-3-Vision for transformers 5: config, image processor, processor and model.

Importing this package registers them with the Auto classes, so the official checkpoints load
with `AutoConfig` / `AutoModelForCausalLM` / `AutoProcessor.from_pretrained(...)` and no
`trust_remote_code`.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModelForCausalLM, AutoProcessor
from transformers.conversion_mapping import register_checkpoint_conversion_mapping

from .configuration_phi3_v import Phi3VConfig
from .image_processing_phi3_v import Phi3VImageProcessor, num_image_tokens
from .modeling_phi3_v import Phi3VForCausalLM, Phi3VImageEmbedding, Phi3VModel, checkpoint_conversions
from .processing_phi3_v import Phi3VProcessor

AutoConfig.register("phi3_v", Phi3VConfig, exist_ok=True)
AutoModelForCausalLM.register(Phi3VConfig, Phi3VForCausalLM, exist_ok=True)
AutoImageProcessor.register(Phi3VConfig, image_processor_classes={"pil": Phi3VImageProcessor}, exist_ok=True)
AutoProcessor.register(Phi3VConfig, Phi3VProcessor, exist_ok=True)
register_checkpoint_conversion_mapping("phi3_v", checkpoint_conversions(), overwrite=True)

__all__ = [
    "Phi3VConfig",
    "Phi3VForCausalLM",
    "Phi3VImageEmbedding",
    "Phi3VImageProcessor",
    "Phi3VModel",
    "Phi3VProcessor",
    "num_image_tokens",
]
