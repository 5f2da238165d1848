"""Beam transforms, DoFns and model adapters for the stylize pipeline."""
