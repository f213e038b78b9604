"""Teacher LLMs behind a registry: an OpenAI-compatible endpoint (and, later, a local model)."""

from .base import TEACHERS, Completion, Teacher, TeacherError, TeacherRequest, Usage, register_teacher
from .cache import CallCache
from .openai_compat import OpenAICompatibleSpec, OpenAICompatibleTeacher

__all__ = [
    "TEACHERS", "CallCache", "Completion", "OpenAICompatibleSpec", "OpenAICompatibleTeacher", "Teacher",
    "TeacherError", "TeacherRequest", "Usage", "register_teacher",
]
