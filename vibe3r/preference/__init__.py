"""vibe3r.preference"""
