"""What the tool writes and reads back: manifests and their schema, folders and WAVs written without losing a
user's file, audio encoding, the export cache (torch-free)."""
