"""Alignment of image and audio parts to text: OCR of images and transcription of audio with real
models, offline, cached by content hash, with the engine and settings recorded as provenance."""
