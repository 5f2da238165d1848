"""stylize-train: transfer learning on a TF Hub feature model -> a router."""
