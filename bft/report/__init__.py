"""Reports: the papers' tables side by side with this project's runs (``bft-report``) and the results notebook."""
