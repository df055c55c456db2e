"""Notifications: channel types (`channels`), routing of incident transitions to the
outbox (`router`), and the worker that delivers the outbox (`worker`)."""
