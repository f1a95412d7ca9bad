"""The iHarmony4 protocol and everything that scores or compares methods with it."""
