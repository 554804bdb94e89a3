"""The trainer program: TensorFlow trained straight from the features topic."""
