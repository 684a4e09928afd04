"""vibe3r.recon"""
