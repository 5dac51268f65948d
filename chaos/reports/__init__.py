"""What a run tells people: the console, report.json, JUnit XML, the HTML timeline, the live status."""
