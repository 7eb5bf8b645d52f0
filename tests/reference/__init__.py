"""Float64 NumPy references for the tests, independent of keras_gdkd."""
