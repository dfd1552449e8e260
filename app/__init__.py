"""cw-billing-sync: ConnectWise Manage billing kept in step with a vendor portal."""
