"""Teacher LLMs behind a registry: any OpenAI-compatible endpoint, or a local transformers model."""

from .base import TEACHERS, Completion, Teacher, TeacherError, TeacherRequest, Usage, register_teacher
from .cache import CallCache
from .local import LocalTeacherSpec, LocalTransformersTeacher
from .openai_compat import OpenAICompatibleSpec, OpenAICompatibleTeacher

__all__ = [
    "TEACHERS", "CallCache", "Completion", "LocalTeacherSpec", "LocalTransformersTeacher", "OpenAICompatibleSpec", "OpenAICompatibleTeacher", "Teacher",
    "TeacherError", "TeacherRequest", "Usage", "register_teacher",
]
