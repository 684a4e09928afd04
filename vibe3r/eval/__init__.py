"""vibe3r.eval"""
