"""The whole pipeline from one recipe: train, merge, convert, bench, report; finished stages skipped."""
