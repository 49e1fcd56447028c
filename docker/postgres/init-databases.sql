-- docker-compose.yml: one database per service on the single host (the chart gives each its own cluster).
CREATE DATABASE toex_tasking OWNER toex;
CREATE DATABASE toex_entity OWNER toex;
CREATE DATABASE toex_pnd OWNER toex;
CREATE DATABASE toex_comms OWNER toex;
CREATE DATABASE toex_safeguarding OWNER toex;
