"""vibe3r.video_gen"""
