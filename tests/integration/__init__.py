"""Tests against the real local Kafka broker and Apicurio registry."""
