"""The tiny random models of :mod:`model_inspector.testing`, under the name the tests import."""

from model_inspector.testing import ARCHS, COMMON, VOCAB, char_tokenizer, tiny_model  # noqa: F401
