"""Media plumbing: ffmpeg processes, probing, stitching, frames and contact sheets."""
