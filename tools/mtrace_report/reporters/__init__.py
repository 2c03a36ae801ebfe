"""Reporters: render the plain data of analysis/ as text, JSON, charts or HTML."""
