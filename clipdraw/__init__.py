"""clipdraw: text-to-image from DALL-E's public pieces.

The pseudo-DALL-E optimizes latent logits fed to OpenAI's dVAE decoder so that the
decoded image maximizes CLIP's similarity with a prompt. Typical notebook use::

    from clipdraw import load_models, generate, GenerationConfig

    models = load_models()                       # CLIP ViT-B/32 + OpenAI dVAE decoder
    result = generate(models, "a photo of albert einstein", GenerationConfig(iters=4000))
    result.image.save("einstein.png")

Every generator, the optimizer, the transformer and dalle-mini, behind one interface::

    from clipdraw import ModelSource, load_engine

    engine = load_engine("transformer", ModelSource(model="toy"))
    result = engine.generate("a red circle", seed=0)
"""

__version__ = "0.1.0"

from .errors import ClipdrawError

# Loaded on first use, so that ``import clipdraw`` (and the CLI's --help) stays instant.
_LAZY = {
    "Models": "models", "load_models": "models",
    "GenerationConfig": "config", "SamplingConfig": "config", "DalleMiniConfig": "config",
    "GenerationResult": "optimize", "generate": "optimize", "generate_batch": "optimize",
    "Frame": "results", "Result": "results",
    "Engine": "engines", "ModelSource": "engines", "load_engine": "engines",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'clipdraw' has no attribute {name!r}")

__all__ = ["ClipdrawError", *_LAZY]
