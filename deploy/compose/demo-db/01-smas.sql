-- The demo's school-management database (smas): the tables the `sql` connectors of deploy/compose/hub.yaml read.
-- The postgres image runs this once, on an empty data volume, in POSTGRES_DB (smas), as POSTGRES_USER.
-- Generated from hub/demo/simulators/smas_schema.py (SQLAlchemy, PostgreSQL dialect); tests/unit/test_compose.py
-- fails when the two differ, so change the simulator's tables and regenerate rather than editing by hand.

CREATE TABLE classes (
	id SERIAL NOT NULL,
	class_id VARCHAR(40) NOT NULL,
	school_code VARCHAR(12) NOT NULL,
	school_year VARCHAR(9) NOT NULL,
	grade INTEGER NOT NULL,
	name VARCHAR(10) NOT NULL,
	homeroom_teacher_id VARCHAR(30),
	size INTEGER NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	deleted_at TIMESTAMP WITHOUT TIME ZONE,
	PRIMARY KEY (id),
	UNIQUE (class_id)
);

CREATE INDEX ix_classes_school_code ON classes (school_code);

CREATE INDEX ix_classes_updated_at ON classes (updated_at);

CREATE TABLE schools (
	id SERIAL NOT NULL,
	school_code VARCHAR(12) NOT NULL,
	name VARCHAR(200) NOT NULL,
	levels TEXT NOT NULL,
	ownership VARCHAR(10) NOT NULL,
	province_code VARCHAR(2) NOT NULL,
	ward_code VARCHAR(5) NOT NULL,
	phone VARCHAR(20),
	status VARCHAR(10) NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	deleted_at TIMESTAMP WITHOUT TIME ZONE,
	PRIMARY KEY (id),
	UNIQUE (school_code)
);

CREATE INDEX ix_schools_updated_at ON schools (updated_at);

CREATE TABLE scores (
	id SERIAL NOT NULL,
	student_id VARCHAR(12) NOT NULL,
	school_code VARCHAR(12) NOT NULL,
	school_year VARCHAR(9) NOT NULL,
	term INTEGER NOT NULL,
	subject VARCHAR(20) NOT NULL,
	kind VARCHAR(10) NOT NULL,
	seq INTEGER NOT NULL,
	score NUMERIC(5, 2),
	pass_result VARCHAR(4),
	teacher_id VARCHAR(30),
	recorded_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	deleted_at TIMESTAMP WITHOUT TIME ZONE,
	PRIMARY KEY (id),
	CONSTRAINT scores_key UNIQUE (student_id, school_year, term, subject, kind, seq)
);

CREATE INDEX ix_scores_student_id ON scores (student_id);

CREATE INDEX ix_scores_updated_at ON scores (updated_at);

CREATE TABLE students (
	id SERIAL NOT NULL,
	student_id VARCHAR(12) NOT NULL,
	full_name VARCHAR(120) NOT NULL,
	date_of_birth DATE NOT NULL,
	gender VARCHAR(6) NOT NULL,
	ethnicity_code VARCHAR(2) NOT NULL,
	nationality VARCHAR(2) NOT NULL,
	school_code VARCHAR(12) NOT NULL,
	grade INTEGER NOT NULL,
	class_name VARCHAR(10) NOT NULL,
	school_year VARCHAR(9) NOT NULL,
	address_province_code VARCHAR(2) NOT NULL,
	address_ward_code VARCHAR(5) NOT NULL,
	address_street VARCHAR(200),
	guardian_phone VARCHAR(20),
	status VARCHAR(12) NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	deleted_at TIMESTAMP WITHOUT TIME ZONE,
	PRIMARY KEY (id),
	UNIQUE (student_id)
);

CREATE INDEX ix_students_school_code ON students (school_code);

CREATE INDEX ix_students_updated_at ON students (updated_at);

CREATE TABLE teachers (
	id SERIAL NOT NULL,
	teacher_id VARCHAR(30) NOT NULL,
	national_id VARCHAR(12) NOT NULL,
	full_name VARCHAR(120) NOT NULL,
	date_of_birth DATE NOT NULL,
	gender VARCHAR(6) NOT NULL,
	school_code VARCHAR(12) NOT NULL,
	subjects TEXT NOT NULL,
	phone VARCHAR(20),
	email VARCHAR(254),
	status VARCHAR(12) NOT NULL,
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	deleted_at TIMESTAMP WITHOUT TIME ZONE,
	PRIMARY KEY (id),
	UNIQUE (teacher_id)
);

CREATE INDEX ix_teachers_school_code ON teachers (school_code);

CREATE INDEX ix_teachers_updated_at ON teachers (updated_at);

CREATE TABLE term_results (
	id SERIAL NOT NULL,
	student_id VARCHAR(12) NOT NULL,
	school_code VARCHAR(12) NOT NULL,
	school_year VARCHAR(9) NOT NULL,
	term VARCHAR(4) NOT NULL,
	learning_rating VARCHAR(8) NOT NULL,
	conduct_rating VARCHAR(8) NOT NULL,
	average_score NUMERIC(4, 1),
	created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
	deleted_at TIMESTAMP WITHOUT TIME ZONE,
	PRIMARY KEY (id),
	CONSTRAINT term_results_key UNIQUE (student_id, school_year, term)
);

CREATE INDEX ix_term_results_student_id ON term_results (student_id);

CREATE INDEX ix_term_results_updated_at ON term_results (updated_at);
