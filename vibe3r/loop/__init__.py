"""vibe3r.loop"""
