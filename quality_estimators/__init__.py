"""quality_estimators package."""
