"""Fine-tuning Phi-3-Vision on a product catalog: the library behind the notebook course.

Importing the package registers the native Phi-3-V classes with transformers' Auto classes, so
`AutoModelForCausalLM.from_pretrained("microsoft/Phi-3-vision-128k-instruct")` works without
`trust_remote_code`.
"""

from phi3v_tutorial import phi3v  # noqa: F401  (registers the Auto classes)

__version__ = "0.1.0"
