"""Export formats behind the plugin registry: adding one is one class and one registration.

Each format says what it needs (the adapter merged into the weights, the GGUF file), refuses bad
input in ``validate`` before any weight is read, and writes its files into the export's temporary
folder in ``write``; ``export_adapter`` runs them in ``order`` and builds the merged model and the
GGUF at most once, for whichever formats need them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..plugins import PluginRegistry


@dataclass
class ExportJob:
    base: Any  # BaseModelInfo
    adapter_path: Path | None
    out_dir: Path  # where the files end up
    tmp: Path  # where they are written, renamed to out_dir at the end
    name: str
    tokenizer: Any
    base_config: dict
    gguf_dtype: str
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    vllm_command: str | None = None
    _model: Any = None

    @property
    def gguf_name(self) -> str:
        return f"{self.name}.gguf"

    def merged_model(self):
        if self._model is None:
            from .merged import merged_model

            self._model = merged_model(self.base, self.adapter_path)
        return self._model

    def ensure_gguf(self) -> Path:
        """The GGUF file, written once whichever format asks first."""
        path = self.tmp / self.gguf_name
        if not path.exists():
            from .gguf_writer import write_gguf

            write_gguf(self.merged_model(), self.tokenizer, path, dtype=self.gguf_dtype, name=self.name)
        return path


class ExportFormat:
    name: ClassVar[str]
    order: ClassVar[int] = 100  # earlier formats write first (GGUF before the Modelfile that points at it)
    merges: ClassVar[bool] = False  # needs the adapter folded into the base weights
    uses_gguf: ClassVar[bool] = False  # writes or points at the GGUF (the architecture must be supported)
    needs_tokenizer: ClassVar[bool] = False  # validate reads the tokenizer (loaded after the cheap checks)

    def validate(self, job: ExportJob) -> None:
        """Refuse what this format cannot write, before any weight is read."""

    def write(self, job: ExportJob) -> None:
        raise NotImplementedError


EXPORTERS: PluginRegistry[ExportFormat] = PluginRegistry("export format", recipe_field="formats",
                                                         group="export_formats")
register_export_format = EXPORTERS.register


@register_export_format
class Merged(ExportFormat):
    name = "merged"
    order = 10
    merges = True

    def write(self, job: ExportJob) -> None:
        from .merged import save_merged

        save_merged(job.merged_model(), job.tokenizer, job.tmp / "merged")
        job.files[self.name] = job.out_dir / "merged"


@register_export_format
class Gguf(ExportFormat):
    name = "gguf"
    order = 20
    merges = True
    uses_gguf = True

    def write(self, job: ExportJob) -> None:
        job.ensure_gguf()
        job.files[self.name] = job.out_dir / job.gguf_name


@register_export_format
class Ollama(ExportFormat):
    name = "ollama"
    order = 30
    merges = True
    uses_gguf = True  # the Modelfile points at the GGUF
    needs_tokenizer = True

    def validate(self, job: ExportJob) -> None:
        from .engines import turn_template

        turn_template(job.tokenizer)  # a template we cannot translate is refused before minutes of work

    def write(self, job: ExportJob) -> None:
        from .engines import write_modelfile
        from .gguf_vocab import adds_token

        job.ensure_gguf()
        # The GGUF records whether its tokenizer adds bos (as the HF one does); then the TEMPLATE must not.
        write_modelfile(job.tmp / "Modelfile", job.tokenizer, job.gguf_name,
                        bos_added=adds_token(job.tokenizer, job.tokenizer.bos_token_id, first=True))
        job.files[self.name] = job.out_dir / "Modelfile"
        job.notes.append(f"ollama create {job.name} -f {job.out_dir / 'Modelfile'}")


@register_export_format
class Vllm(ExportFormat):
    name = "vllm"
    order = 40

    def validate(self, job: ExportJob) -> None:
        from .engines import check_vllm_adapter

        check_vllm_adapter(job.adapter_path)

    def write(self, job: ExportJob) -> None:
        from .engines import write_vllm

        _, job.vllm_command = write_vllm(job.tmp, job.out_dir, base_folder=job.base.folder,
                                         adapter_path=job.adapter_path, name=job.name)
        job.files[self.name] = job.out_dir / "serve-vllm.sh"


def export_formats() -> tuple[str, ...]:
    """Every registered format, in writing order."""
    return tuple(cls.name for cls in sorted(EXPORTERS.classes(), key=lambda cls: (cls.order, cls.name)))
