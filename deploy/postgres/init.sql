-- Run once by the postgres image when its volume is new: the second database the team
-- tracking server needs (users and permissions of --app-name basic-auth).
CREATE DATABASE mlflow_auth OWNER mlflow;
