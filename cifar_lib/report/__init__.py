"""The written report: report/report.{md,html,pdf} from the study's records. It reads
records through cifar_lib.study and never imports the training code."""
