DROP TABLE sessions;
DROP TABLE principals;
