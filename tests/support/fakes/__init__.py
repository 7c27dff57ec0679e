"""In-memory fakes of the services' repositories, for use-case tests on a fake unit of work."""
