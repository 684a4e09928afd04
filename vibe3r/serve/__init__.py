"""vibe3r.serve"""
