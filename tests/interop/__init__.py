"""Live interoperability with other implementations (the Go reference)."""
