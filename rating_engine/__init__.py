"""rating-engine: real-time prepaid call rating for Asterisk."""

__version__ = "0.1.0"
