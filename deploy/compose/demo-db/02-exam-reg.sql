-- The demo's exam registration database (exam_reg): its registrations and the transactional outbox the
-- `outbox` connector of deploy/compose/hub.yaml reads. Run once by the postgres image, after 01-smas.sql.
-- Generated from hub/demo/simulators/outbox.py (SQLAlchemy, PostgreSQL dialect); tests/unit/test_compose.py
-- fails when the two differ.

CREATE DATABASE exam_reg;
\connect exam_reg

CREATE TABLE outbox (
	id TEXT NOT NULL,
	seq INTEGER NOT NULL,
	aggregatetype TEXT NOT NULL,
	aggregateid TEXT NOT NULL,
	type TEXT NOT NULL,
	payload TEXT,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	published_at TIMESTAMP WITHOUT TIME ZONE,
	PRIMARY KEY (id),
	UNIQUE (seq)
);

CREATE INDEX ix_outbox_published_at ON outbox (published_at);

CREATE TABLE registrations (
	id SERIAL NOT NULL,
	registration_id VARCHAR(20) NOT NULL,
	exam_year INTEGER NOT NULL,
	council_code VARCHAR(2) NOT NULL,
	national_id VARCHAR(12) NOT NULL,
	full_name VARCHAR(120) NOT NULL,
	date_of_birth DATE NOT NULL,
	gender VARCHAR(6) NOT NULL,
	candidate_type VARCHAR(30) NOT NULL,
	school_code VARCHAR(12),
	subjects TEXT NOT NULL,
	foreign_language VARCHAR(2),
	language_exemption BOOLEAN NOT NULL,
	exemption_certificate TEXT,
	priority_area VARCHAR(6) NOT NULL,
	priority_group VARCHAR(2),
	registered_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	status VARCHAR(10) NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (registration_id)
);
