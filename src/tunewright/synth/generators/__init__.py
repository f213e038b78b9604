"""Teacher-driven generators for synthetic rounds, one file each, behind one registry."""

from .base import (SYNTH_GENERATORS, Correction, Failure, GenerationContext, Guidance, Produced, SynthGenerator,
                   provenance, register_synth_generator, template_sha256)
from . import evol_instruct as _evol_instruct  # noqa: F401  built-ins register like plugins do
from . import grounded_chunks as _grounded_chunks  # noqa: F401
from . import magpie as _magpie  # noqa: F401
from . import paraphrase as _paraphrase  # noqa: F401
from . import persona_dialogue as _persona_dialogue  # noqa: F401
from . import self_instruct as _self_instruct  # noqa: F401

__all__ = ["SYNTH_GENERATORS", "Correction", "Failure", "GenerationContext", "Guidance", "Produced",
           "SynthGenerator", "provenance", "register_synth_generator", "template_sha256"]
