"""What several test files share: hand-made releases, composing the real configs, the run record's contract."""
