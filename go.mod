module github.com/turumba/realtime

go 1.26.8
