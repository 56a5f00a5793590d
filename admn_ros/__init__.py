"""admn_ros package."""
