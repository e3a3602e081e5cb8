"""mp4 -> visual tokens (avtokens.visual_tokenizers) + audio codes (avtokens.audio_codecs), aligned
per latent frame.

Light on purpose: the Snakefile imports this package to validate its config, so
nothing here imports torch. Training code reads token files with `load_tokens`.
"""

__version__ = "0.1.0"


from avtokens.errors import AvTokensError  # noqa: F401 (the package's error, importable from here)


def load_tokens(path, device="cpu"):
    """Load a token file written by this project; see `avtokens.tokenfile.load_tokens`."""
    from avtokens.tokenfile import load_tokens as _load

    return _load(path, device=device)
