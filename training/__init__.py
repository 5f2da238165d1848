"""stylize-train: transfer learning on a TF Hub feature model, saved as a router."""
